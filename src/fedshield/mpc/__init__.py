"""Two-party secure computation for Private FLAME: additive sharing over Z_2^64 with fixed point, a trusted
dealer for correlated randomness, and two server processes that talk over TCP.

Modules, bottom up: ``ring`` (ring arithmetic, fixed point), ``prg`` (AES-CTR stream), ``transport`` (framed
messages over sockets), ``correlations`` and ``dealer`` (correlated randomness), ``cheetah`` (the same
correlations without a dealer, computed by the two servers under SecretFlow SPU), ``party`` (2PC operations),
``flame_protocol`` (FLAME's round as a 2PC program), ``client`` (clients' sharing), ``server`` (the server
process) and ``session`` (starting the servers, feeding a round, collecting the result).
"""
