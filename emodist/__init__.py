"""emodist: emotion labels for large video collections with VLMs, on Ray."""
