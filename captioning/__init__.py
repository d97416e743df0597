"""LoraSmith captioners (BLIP, GIT, WD14) behind one small protocol; see captioning/protocol.py."""
