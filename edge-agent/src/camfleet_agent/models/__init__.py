"""Model bundles on the agent: pull announced bundles, verify them, swap the active runtime, keep one for rollback.

On disk, per classifier::

    data_dir/models/<classifier>/active.json     {"version": "7", "previous": "6"}  (written atomically)
    data_dir/models/<classifier>/7/               the active bundle
    data_dir/models/<classifier>/6/               the previous one, kept for rollback
    data_dir/models/<classifier>/8.tmp/           a download being checked (removed on any failure)
    data_dir/models/<classifier>/trust.json       {"shop": {"highest": 7, ...}}: the high-water mark per scope

Whatever goes wrong with a new bundle (download, size, sha256, zip, signature, hashes, ONNX), the reason is
logged and the classifier keeps running the model it had. What the agent trusts (docs/SECURITY.md, "Model
bundles and the fleet key"): a bundle signed by the fleet key whose manifest names this site and classifier
(or is the default bundle, as the default classifier only), at a version no lower than the highest applied
unless a hub-signed rollback names it, downloaded from the hub's own origin.

Modules: `manager` (the worker thread, apply and swap), `download` (fetch from the hub's origin, size and
sha256), `loading` (fleet-key verification and ONNX Runtime), `trust` (scope, version and rollback rules),
`store` (the state files and pruning), `errors`.
"""
