import sys,re,collections
names={}
cnt=collections.Counter()
cfn=None
for line in open(sys.argv[1]):
    m=re.match(r'cfn=\((\d+)\)(?: (.*))?',line)
    if m:
        i,n=m.groups()
        if n: names[i]=n
        cfn=i; continue
    m=re.match(r'fn=\((\d+)\)(?: (.*))?',line)
    if m:
        i,n=m.groups()
        if n: names[i]=n
        continue
    m=re.match(r'calls=(\d+)',line)
    if m and cfn: cnt[cfn]+=int(m.group(1))
pat=re.compile(sys.argv[2]) if len(sys.argv)>2 else None
for i,c in cnt.most_common():
    n=names.get(i,i)
    if pat is None or pat.search(n): print(c,n)
