"""Clip input: everything between an input uri and the rows the pipeline decodes.

    source     open_source -> ClipSource: its rows, read in Ray read tasks (or in process)
    detect     what an input is (folder, glob, manifest, split file, shards), decided cheaply
    walk       listing folders and globs, streamed (S3 pages, local directories)
    manifests  one reader for csv / jsonl / parquet manifests and split files
    lines      manifest and split-file lines, dataset label codes, relative uris
    shards     WebDataset-style tar shards, member by member
    open       opening one clip for decoding, once (file, object, tar member, bytes)
    limits     the input limits, checked before anything is decoded
    rows       the row schema, failure rows, clip ids
    suffixes   file kinds by name

Data flows one way: source -> detect -> walk / manifests / shards -> rows; the decoders
(emodist.decoders) open clips through `open`.
"""
