"""Sub-center data cleaning: which training utterances sit far from their class."""
