/* What lora.c (reading) and lora_map.c (resolving) share. Internal. */
#ifndef MGPU_LORA_INTERNAL_H
#define MGPU_LORA_INTERNAL_H

#include "lora/lora.h"
#include "mgpu/safetensors.h"

struct mgpu_lora {
    char *label;
    mgpu_safetensors *st;
    mgpu_lora_module *modules; /* sorted by name; names owned */
    size_t module_count;
    const char **ignored; /* names inside st */
    size_t ignored_count;
};

/* The family and model a module name addresses, from its prefix. */
void mgpu_lora_classify_name(const char *name, mgpu_lora_format *format, mgpu_lora_kind *kind);

#endif
