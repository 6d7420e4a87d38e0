"""Generation: sampling candidates, best-of-n, and generative fusion of the top answers (GenFuser)."""
