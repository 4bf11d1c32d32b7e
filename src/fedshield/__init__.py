"""fedshield: backdoor attacks and defenses for federated learning.

The core is a set of pure functions on tensors (defenses, attacks, partitions); the simulator, the CLI and the
Flower adapters are thin shells around them. See docs/architecture.md for the data flow.
"""

__version__ = "0.1.0"
