"""swapper-gpu: Swap jobs in; swapped mezzanine and face track out."""
