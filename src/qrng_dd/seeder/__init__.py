"""``qrng-dd seed``: feed the Linux kernel's entropy pool with bytes from a gateway.

Theory of operation: every ``--interval`` seconds (or once, with ``--once``, from a systemd
timer) the seeder draws ``--bytes`` bytes from a gateway's ``/api/random`` through
:class:`~qrng_dd.client.Client`, XORs them with as many bytes of ``os.urandom`` and hands the
result to the kernel with the ``RNDADDENTROPY`` ioctl, crediting ``--credit-bits`` bits.

Rules:

- **The key never reaches argv or a log.** It comes from ``QRNG_GATEWAY_API_KEY`` or
  ``--api-key-file``: a command line is readable by every local user (``ps``).
- **Cleartext only on loopback.** An ``http://`` gateway off the host would let anyone on the
  path read (and choose) the bytes we add; ``--allow-insecure-http`` says the operator knows.
- **Credit nothing by default.** Crediting bits says "an attacker cannot guess these": that is
  trusting the gateway and every hop to it. Mixed without credit, the bytes can only help.
- **The device is checked before the first draw.** An empty ``RNDADDENTROPY`` at start finds a
  missing ``CAP_SYS_ADMIN`` before any byte is taken from the gateway (each is served once).
- **One-shot failures are one line; the daemon carries on.** With ``--once`` a failure is one
  line on stderr and exit status 1; the daemon logs it, counts it and tries again at the next
  interval. A device that refuses the ioctl stops both (exit 1): waiting will not fix it.
- **Counters survive restarts.** With ``--textfile`` the counters start from the values the
  file already holds, so a timer-driven ``--once`` keeps them monotonic for Prometheus.

Layout: :mod:`.options` checks the options without I/O, :mod:`.kernel` mixes and makes the
ioctl, :mod:`.stats` keeps the textfile, :mod:`.command` is the daemon and the one-shot run.
"""
