"""Looking inside the networks: the chapters' probes, tables and pictures, one module per paper.

``dmcbook.models`` holds only the networks (what a user imports to train); the code here
imports them and ``dmcbook.viz`` and is never imported by them, so training pulls in
neither matplotlib nor these helpers.
"""
