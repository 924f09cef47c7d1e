"""EM neuron instances: training targets from id volumes, decoding predictions back into neuron ids."""
