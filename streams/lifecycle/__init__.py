"""The model lifecycle: the continuous trainer, the model store, publishing and watching
``model-updates``, leading training on one worker of the group."""
