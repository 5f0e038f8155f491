#!/usr/bin/env python3
# Splits an .fbin of queries for `bench anns`: even rows → A (build), 500 evenly spaced odd rows → B
# (held-out test). usage: split_fbin.py SRC.fbin A.fbin B.fbin
import sys, struct
if len(sys.argv) != 4:
    sys.exit('usage: split_fbin.py SRC.fbin A.fbin B.fbin')
src, a, b = sys.argv[1:4]
with open(src, 'rb') as f:
    n, d = struct.unpack('<II', f.read(8)); data = f.read()
row = d * 4
ev = [data[i*row:(i+1)*row] for i in range(0, n, 2)]
od = [data[i*row:(i+1)*row] for i in range(1, n, 2)][::max(1, (n//2)//500)][:500]
for path, rows in ((a, ev), (b, od)):
    with open(path, 'wb') as f:
        f.write(struct.pack('<II', len(rows), d)); f.write(b''.join(rows))
