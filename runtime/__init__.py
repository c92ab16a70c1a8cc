"""AITQE runtime: load a checkpoint or bundle, preprocess, prompt, generate, parse."""

import logging

# transformers imports torchao (the fp8 extra) whenever it is installed, and torchao's import logs
# notices (C extensions built for another torch, pytree registrations) that are not this program's
# errors: stderr stays for the one-line `error:` messages
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)
