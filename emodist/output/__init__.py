"""A run's output folder: its layout, its parts, the ledger of done clips, and the run's
writing side (commit, writer, carry, keys, lease, resume).

    OUT/predictions/part-*.parquet   one row per labeled clip (config_hash tells configs apart)
    OUT/failures/part-*.parquet      one row per failed clip (failures/_retried/: set aside)
    OUT/summary.json                 the last run's summary
    OUT/_emodist/                    the run's own state: configs/, lease.json, logs/, keys/

Only this package spells the layout out (folder.py); readers (`eval`, `show`, `audit`,
`finetune --descriptions-from`) go through `RunFolder`, which refuses to mix the rows of
two configs. Nothing is imported here, so that the stages and the input readers can use
carry.py and ledger.py without loading the driver's side.
"""
