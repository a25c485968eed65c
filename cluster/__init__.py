"""Several service nodes on one PostgreSQL: who is alive, and which node owns what.

    rendezvous   pure: the owner of a key among the live members (highest random weight)
    membership   a node's seat in PostgreSQL, held by an advisory lock on a connection of its
                 own, and the live members as PostgreSQL sees them

There is no coordinator of our own: PostgreSQL, which the district already operates, knows
which connections are alive, and every node computes the same owners from the same members.
"""
