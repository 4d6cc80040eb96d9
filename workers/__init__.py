"""The Dramatiq worker pool: broker set-up, middleware, actors and the functions they call.

Start it with ``dramatiq workers.main -p N -t M`` (see the Makefile's ``worker`` target).
"""
