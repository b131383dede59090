"""StyleGAN-prior image restoration: RLS / RLS+ (Gheisari & Genovesio, arXiv 2311.16923)
and its peers, as one batched search engine."""

__version__ = "0.1.0"
