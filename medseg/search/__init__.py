"""CAKES configuration search (`medseg search`): supernet, costs, selection under a budget, the JSON file.

supernet.py  SuperCakes: all candidate ops at full width, a learnable scale γ per (op, channel) path
cost.py      exact parameters / conv FLOPs of a configuration against the all-3D network
select.py    per-layer top-C_out |γ|, or the global choice under a budget (Lagrangian bisection)
output.py    the configuration file and the printed summary
run.py       SearchModule (Lightning) and the LightningCLI behind the command
"""
