"""Library code shared by the algorithms: data, augmentation, models, training loop."""
