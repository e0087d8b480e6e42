"""Pictures and pages: the one heat-map overlay (:mod:`.overlay`), PNG figures and HTML (:mod:`.render`), the
pictures Jupyter shows (:mod:`.display`, :mod:`.show`) and the HTML report (:mod:`.report`). Nothing here is
imported by ``import pellucid`` except :mod:`.show` and what it needs, none of which loads matplotlib."""
