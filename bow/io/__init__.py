"""Files: stage bookkeeping (fingerprints, atomic writes, locks), the HDF5 feature store and its
sharded writer, feature sets."""
