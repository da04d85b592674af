"""Small documents with facts a retrieval test can ask about (and an erasure can forget)."""

from __future__ import annotations

DOCS = {
    "harbour.txt": "Northwind Harbour Authority reported cargo volume of 41 million tonnes. "
                   "The harbour master is Ingrid Solberg.",
    "bakery.md": "# Blue Oven Bakery\n\nBlue Oven Bakery opened its ninth shop in Tartu. "
                 "Its head baker is Marek Tamm, who favours rye sourdough.",
    "orchard.html": "<html><body><nav>menu</nav><p>Sunny Slope Orchard harvested 800 crates "
                    "of Antonovka apples. The orchard keeper is Liis Kask.</p></body></html>",
}
