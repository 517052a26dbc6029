"""The training engine: distribution strategy and precision policy, optimizer and schedule, the
Task interface and the one distributed training loop with checkpoints, the run manifest, folder
locks and the checks of inputs and outputs.
"""
