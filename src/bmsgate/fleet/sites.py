"""Towns spread over South Africa, where the fleet demo's simulated gateways are installed.

Coordinates are the towns' public centre coordinates (rounded to 4 decimals, ~10 m); the demo
(``fleet.agent.simulated.demo_sites``) places each site a few km from its town so that the sites of one town
do not overlap on the map.
"""

from __future__ import annotations

from typing import Final

__all__ = ["SOUTH_AFRICAN_TOWNS"]


SOUTH_AFRICAN_TOWNS: Final[tuple[tuple[str, str, float, float], ...]] = (
    ("Johannesburg", "Gauteng", -26.2041, 28.0473),
    ("Cape Town", "Western Cape", -33.9249, 18.4241),
    ("Durban", "KwaZulu-Natal", -29.8587, 31.0218),
    ("Pretoria", "Gauteng", -25.7479, 28.2293),
    ("Gqeberha", "Eastern Cape", -33.9608, 25.6022),
    ("Bloemfontein", "Free State", -29.0852, 26.1596),
    ("East London", "Eastern Cape", -33.0153, 27.9116),
    ("Polokwane", "Limpopo", -23.9045, 29.4689),
    ("Mbombela", "Mpumalanga", -25.4753, 30.9694),
    ("Kimberley", "Northern Cape", -28.7282, 24.7499),
    ("Rustenburg", "North West", -25.6676, 27.2421),
    ("Pietermaritzburg", "KwaZulu-Natal", -29.6006, 30.3794),
    ("George", "Western Cape", -33.9630, 22.4617),
    ("Upington", "Northern Cape", -28.4478, 21.2561),
    ("Stellenbosch", "Western Cape", -33.9321, 18.8602),
    ("Paarl", "Western Cape", -33.7342, 18.9621),
    ("Worcester", "Western Cape", -33.6465, 19.4485),
    ("Mossel Bay", "Western Cape", -34.1831, 22.1460),
    ("Knysna", "Western Cape", -34.0363, 23.0471),
    ("Oudtshoorn", "Western Cape", -33.5906, 22.2014),
    ("Beaufort West", "Western Cape", -32.3567, 22.5830),
    ("Springbok", "Northern Cape", -29.6643, 17.8865),
    ("Mahikeng", "North West", -25.8560, 25.6403),
    ("Klerksdorp", "North West", -26.8521, 26.6667),
    ("Potchefstroom", "North West", -26.7145, 27.0970),
    ("Welkom", "Free State", -27.9770, 26.7352),
    ("Kroonstad", "Free State", -27.6504, 27.2349),
    ("Bethlehem", "Free State", -28.2308, 28.3071),
    ("Harrismith", "Free State", -28.2728, 29.1295),
    ("Newcastle", "KwaZulu-Natal", -27.7580, 29.9318),
    ("Richards Bay", "KwaZulu-Natal", -28.7807, 32.0383),
    ("Margate", "KwaZulu-Natal", -30.8636, 30.3705),
    ("Mthatha", "Eastern Cape", -31.5889, 28.7844),
    ("Komani", "Eastern Cape", -31.8976, 26.8753),
    ("Graaff-Reinet", "Eastern Cape", -32.2522, 24.5308),
    ("Makhanda", "Eastern Cape", -33.3042, 26.5328),
    ("Jeffreys Bay", "Eastern Cape", -34.0507, 24.9192),
    ("Hermanus", "Western Cape", -34.4187, 19.2345),
    ("Langebaan", "Western Cape", -33.0924, 18.0326),
    ("Clanwilliam", "Western Cape", -32.1786, 18.8911),
    ("eMalahleni", "Mpumalanga", -25.8713, 29.2332),
    ("Middelburg", "Mpumalanga", -25.7751, 29.4648),
    ("Tzaneen", "Limpopo", -23.8332, 30.1635),
    ("Musina", "Limpopo", -22.3395, 30.0415),
    ("Thabazimbi", "Limpopo", -24.5917, 27.4116),
    ("Vryburg", "North West", -26.9566, 24.7284),
    ("Hartbeespoort", "North West", -25.7510, 27.8973),
)
"""(town, province, latitude, longitude)."""
