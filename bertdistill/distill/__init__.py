"""Distillation: the losses by name (one registry), layer maps and feature projections, the
TinyBERT stages' tasks, and transfer sets with teacher logits.
"""
