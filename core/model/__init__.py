"""The Attention Branch Network: model, feature extraction per attention mode, training, attention overlays."""
