"""Writing outputs safely: atomic files, video writers, resumable JSON Lines, locks and input guards."""
