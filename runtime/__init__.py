"""AITQE runtime: load a checkpoint or bundle, preprocess, prompt, generate, parse."""
