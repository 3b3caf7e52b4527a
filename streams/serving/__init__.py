"""Serving: records, the one recommend interface and its two backends (this process, or two child
processes), pending requests, the live model, the HTTP views."""
