"""Pictures and pages: the one heat-map overlay (:mod:`.overlay`), PNG figures and HTML (:mod:`.render`), the
pictures Jupyter shows (:mod:`.display`, and :mod:`.show` for ``pl.show``), and the pages built from them (the
HTML report, :mod:`.report`). matplotlib is imported inside the functions that draw, never at import time."""
