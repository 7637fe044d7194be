#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(){ void *p = malloc(100); free(p); char buf[512]; FILE *f=fopen("/proc/self/smaps","r"); char name[512]=""; while(fgets(buf,sizeof buf,f)){ if(strchr(buf,'-') && buf[0]>='0' && buf[0]<='f' && strchr(buf,' ')) { strncpy(name,buf,511); name[strlen(name)-1]=0;} if(!strncmp(buf,"Rss:",4)){ int kb; sscanf(buf+4,"%d",&kb); if(kb>0) printf("%6d %s\n",kb,name); } } f=fopen("/proc/self/status","r"); while(fgets(buf,sizeof buf,f)) if(!strncmp(buf,"VmRSS",5)||!strncmp(buf,"RssAnon",7)||!strncmp(buf,"RssFile",7)) fputs(buf,stdout); return 0; }
