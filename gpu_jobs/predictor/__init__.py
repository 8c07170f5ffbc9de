"""The performance predictor's training job: history → a torch MLP → the model as JSON.

`dataset.py` exports an agent's stored history (no torch); `train.py` trains the MLP (torch,
CPU or GPU) and writes `model.json`, which `chimera.domain.predictor` reads and runs in numpy.
"""
