"""`emodist audit`: likely label errors ranked from the stored distributions, the flip
tables, a review page for people, and the corrected manifest from their decisions.

read.py streams predictions and holds the manifest compactly; rank.py ranks with
cleanlab and counts flips; frames.py and page.py write the review page; report.py ties
them into DIR (issues.parquet, audit.json, index.html); apply.py writes the corrected
manifest from the page's decisions.
"""
