"""Camera ingest: WHIP and RTSP in camera worker processes, latest-frame slots, camera health.

camera --WHIP/RTSP--> worker process (worker.py: hub.py, receive.py, rtsp.py) --> FrameSlot
                      (frames.py)
                      --> analytics consumers (sampler.py), viewers (WHEP, MJPEG, snapshots)
API process: pool.py starts and routes to the workers; monitor.py polls their health.
"""
