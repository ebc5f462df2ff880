"""Corpus on disk -> Kaldi data dirs (stage 1). Pure functions; the CLI is in tsekit.cli.prepare."""
