"""The peers `seedloop bench` measures seedloop's worker against: what a user would pick instead.

* `quix_app.py`: a quixstreams 3.x application (state in its RocksDB store, changelogged);
* `plain_loop.py`: a hand-written confluent-kafka loop (1,000 messages a batch, dict state);
* `cpu.py`: CPU meters (a process's own, and a Redis server's from `INFO cpu`) read over the same
  10 %..90 % window the drain rate is measured over;
* `runner.py`: starts a peer as a child process (bench_children.Child) and drains the bench's data with it.

The two apps are standalone scripts (confluent_kafka / quixstreams, orjson and redis only, nothing
of seedloop): quixstreams pins confluent-kafka < 2.13 and seedloop needs >= 2.16, so the quix app
runs from its own virtual environment (see runner.quix_python).
"""
