"""Distributed-backend configs, shipped as package data so ``deepspeed: zero2`` resolves in any install."""
