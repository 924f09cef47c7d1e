"""EM neuron instances, the algorithms only: training targets from id volumes, the loss, decoding predictions back
into neuron ids. (Chunked prediction of large volumes is in medseg.inference.chunked.)"""
