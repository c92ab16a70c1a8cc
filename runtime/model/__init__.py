"""The AITQE model: its config, checkpoint reading and writing, and the vision encoder."""
