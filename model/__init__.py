"""Width-switchable EDSR, CSD losses, data, training and evaluation."""

from model.edsr import EDSR, EDSRConfig, count_macs, count_params
from model.weights import load_weights, save_weights

__all__ = ["EDSR", "EDSRConfig", "count_macs", "count_params", "load_weights", "save_weights"]
