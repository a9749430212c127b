"""The network and its training objective: backbone, FPN, SSH heads, anchors, box coding, matching, targets, loss, post-processing, preprocessing, checkpoints."""
