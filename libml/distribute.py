"""Which tf.distribute strategy a run uses, from the machine and the TF_CONFIG variable."""

import json
import os

import tensorflow as tf


def strategy_from_environment() -> tf.distribute.Strategy | None:
    """Across machines when TF_CONFIG describes a cluster (one replica per GPU of every
    worker, or one per CPU-only worker); else one replica per GPU of this machine."""
    tf_config = os.environ.get('TF_CONFIG')
    if tf_config:
        try:
            cluster = json.loads(tf_config)
            task = cluster['task']
            workers = [*cluster['cluster'].get('chief', []), *cluster['cluster']['worker']]
            str(task['type']), int(task['index'])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                'TF_CONFIG must be JSON like {"cluster": {"worker": ["host1:port", '
                f'"host2:port"]}}, "task": {{"type": "worker", "index": 0}}}} ({e!r})'
            ) from e
        print(f'{task["type"]} {task["index"]} of a {len(workers)}-machine cluster', flush=True)
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices('GPU')
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else None
