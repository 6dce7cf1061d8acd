"""CReST and CReST+: class-rebalancing self-training for long-tailed semi-supervised learning."""
