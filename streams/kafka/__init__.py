"""Kafka: client factories, topics, direct writes, changelog ends, the embedded broker, and
``faust_patches`` (every use of a private Faust/mode/aiokafka name, checked at start-up)."""
