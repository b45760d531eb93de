// Every kernel's start and duration on the GPU, graph nodes included, for machines without nsys:
// a CUPTI activity tracer that the CUDA driver loads into the traced process at its CUDA init
// (CUDA_INJECTION64_PATH). check.sh's `timeline` step builds and uses it; nsys_step.py reads
// the CSV it writes (the columns nsys's cuda_gpu_trace report has).
//   gcc -shared -fPIC -O2 -I$CUDA/include -o libkernel_trace.so kernel_trace.c -L$CUDA/lib64 -lcupti
//   CUDA_INJECTION64_PATH=$PWD/libkernel_trace.so KERNEL_TRACE_OUT=/tmp/trace nanohost ...
//     -> /tmp/trace.<pid>.csv for each process that initialises CUDA
// KREC is the newest kernel record of the CUPTI headers (check.sh tries them newest first);
// CUPTI hands out records of its newest version.
#include <cupti.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifndef KREC
#define KREC CUpti_ActivityKernel9
#endif

static FILE* out;
enum { BUFFER_BYTES = 16 << 20 };

static void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = (uint8_t*)aligned_alloc(8, BUFFER_BYTES);
  *size = *buffer ? BUFFER_BYTES : 0;
  *max_records = 0;
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t* buffer, size_t size, size_t valid) {
  (void)ctx, (void)stream, (void)size;
  CUpti_Activity* rec = NULL;
  while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
    if (rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
    const KREC* k = (const KREC*)rec;
    fprintf(out, "%llu,%llu,%u,%llu,\"%s\"\n", (unsigned long long)k->start, (unsigned long long)(k->end - k->start),
            (unsigned)k->streamId, (unsigned long long)k->graphNodeId, k->name ? k->name : "?");
  }
  free(buffer);
}

static void flush_at_exit(void) {
  cuptiActivityFlushAll(1);
  if (out) fclose(out);
}

int InitializeInjection(void) {
  const char* prefix = getenv("KERNEL_TRACE_OUT");
  char path[4096];
  snprintf(path, sizeof path, "%s.%d.csv", prefix ? prefix : "kernel_trace", (int)getpid());
  out = fopen(path, "w");
  if (!out) return 0;
  fprintf(out, "Start (ns),Duration (ns),Strm,GraphNode,Name\n");
  if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
      cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS) {
    fprintf(stderr, "kernel_trace: CUPTI refused kernel activity tracing\n");
    return 0;
  }
  atexit(flush_at_exit);
  return 1;
}
