"""An answer read and checked: the label and JSON checks (checks.py), an output schema sent and
validated (schema.py), and how an answer's text becomes its row's typed columns, one sample or
several (reading.py)."""
