"""What the memory packages (`kvcache`, `adapters`, `textual`) and the sidecar share: units, the placement tiers, the
value model and content digests. Small on purpose: no I/O at import, no dependency on any other package of the
project."""
