# The program behind docs/profile-python.svg (README, "Heap profile"):
# JSON documents parsed into dicts, then every other source string freed,
# leaving holes between the strings that stay. Python frees its objects
# when it exits, so the profile is taken here, on demand, with
# fitalloc_profile_dump (to $FITALLOC_PROFILE.now) when run under fitalloc.
import ctypes
import json
import os

docs = [json.dumps({"id": i, "name": "user%d" % i, "tags": ["t%d" % j for j in range(i % 8)]})
        for i in range(100000)]
parsed = [json.loads(d) for d in docs]
del docs[::2]
index = {p["name"]: p for p in parsed[::3]}

dump = getattr(ctypes.CDLL(None), "fitalloc_profile_dump", None)
if dump and "FITALLOC_PROFILE" in os.environ:
    dump((os.environ["FITALLOC_PROFILE"] + ".now").encode())
print(len(docs), len(parsed), len(index))
