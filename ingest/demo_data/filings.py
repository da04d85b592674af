"""Generated company-filing-style documents with facts one can ask about, plus the questions.

Every document states its company's sector, headquarters, chief executive, revenue, net income,
head count and a distinctive risk factor; each question names one company, so retrieval quality
is measurable as "did the right document come back".
"""

from __future__ import annotations

import random
from dataclasses import dataclass

PREFIXES = ["Acme", "Borealis", "Cobalt", "Dunmore", "Elmwood", "Fjord", "Granite", "Halcyon",
            "Ironbark", "Juniper", "Kestrel", "Lumen", "Meridian", "Northwind", "Obsidian",
            "Pinecrest", "Quarry", "Redwood", "Sable", "Tidewater", "Umber", "Vantage",
            "Willow", "Xylo", "Yarrow", "Zephyr"]
SUFFIXES = ["Holdings", "Systems", "Foods", "Logistics", "Energy", "Biotech", "Textiles",
            "Robotics", "Mining", "Media"]
SECTORS = {"Holdings": "diversified industrials", "Systems": "enterprise software",
           "Foods": "packaged foods", "Logistics": "freight and warehousing",
           "Energy": "renewable power", "Biotech": "drug development",
           "Textiles": "technical fabrics", "Robotics": "factory automation",
           "Mining": "copper mining", "Media": "streaming media"}
CITIES = ["Oslo", "Denver", "Lyon", "Osaka", "Austin", "Porto", "Calgary", "Leeds", "Tallinn",
          "Perth", "Graz", "Boise"]
FIRST = ["Alice", "Bruno", "Chen", "Dara", "Emil", "Farah", "Goran", "Helga", "Ines", "Jonas",
         "Keiko", "Luis", "Maren", "Nikhil", "Olga", "Pavel"]
LAST = ["Anders", "Brandt", "Castro", "Dubois", "Eriksen", "Fischer", "Garcia", "Horvat",
        "Ito", "Jensen", "Kowalski", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov"]
RISKS = ["volatile copper prices", "a single supplier of lithium cells", "new EU packaging rules",
         "rising port congestion", "a pending patent dispute", "currency swings in the yen",
         "drought affecting crop yields", "cyber attacks on its billing platform",
         "the expiry of a key licence in 2027", "labour shortages in its warehouses"]


@dataclass(frozen=True)
class Filing:
    doc_id: str
    company: str
    text: str
    questions: list[str]


def generate(documents: int, seed: int) -> list[Filing]:
    rng = random.Random(seed)
    names = [f"{p} {s}" for p in PREFIXES for s in SUFFIXES]
    rng.shuffle(names)
    if documents > len(names):
        raise ValueError(f"at most {len(names)} distinct companies can be generated")
    filings = []
    for i, company in enumerate(names[:documents]):
        sector = SECTORS[company.split()[1]]
        city, ceo = rng.choice(CITIES), f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        year = rng.randint(2019, 2025)
        revenue = rng.randint(40, 9000)
        margin = rng.randint(2, 18)
        staff = rng.randint(120, 45000)
        risk = rng.choice(RISKS)
        growth = rng.randint(-8, 25)
        text = (
            f"{company} Annual Report, fiscal year {year}.\n\n"
            f"{company} is a {sector} company headquartered in {city}. "
            f"Its chief executive officer is {ceo}.\n\n"
            f"Results. For fiscal {year}, {company} reported revenue of ${revenue} million, "
            f"a change of {growth}% from the prior year, and net income of "
            f"${revenue * margin // 100} million, a net margin of {margin}%. "
            f"At year end the company employed {staff} people.\n\n"
            f"Risk factors. Management identifies {risk} as the principal risk to results in the "
            f"coming year. The board reviews this exposure quarterly.\n\n"
            f"Outlook. {company} expects demand in {sector} to remain steady and plans to keep "
            f"capital spending in line with depreciation."
        )
        questions = [
            f"Who is the chief executive officer of {company}?",
            f"What revenue did {company} report for fiscal {year}?",
            f"What is the principal risk named by {company}?",
        ]
        filings.append(Filing(f"filing-{i:04d}", company, text, questions))
    return filings
