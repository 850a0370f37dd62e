/* Architecture knowledge the model view needs: which names make a module,
 * what kind of layer a module is, and which architecture a set of tensor
 * names and shapes belongs to. Internal to libmgpu. */
#ifndef MGPU_FORMATS_ARCH_H
#define MGPU_FORMATS_ARCH_H

#include <stdbool.h>
#include <stddef.h>

#include "mgpu/model.h"

/* Looks up a tensor of one component by its stripped name. */
typedef struct mgpu_arch_probe {
    const void *context;
    const mgpu_tensor_info *(*find)(const void *context, const char *name);
} mgpu_arch_probe;

/* `reason` receives a static string naming the evidence. */
mgpu_arch mgpu_arch_detect(const mgpu_arch_probe *probe, const char **reason);

/* Length of the module part of a tensor name: "a.b.weight" -> 3 ("a.b").
 * Equal to the whole length when the tensor is its own module. */
size_t mgpu_module_name_length(const char *tensor_name);

/* weight is the module's tensor named "<module>.weight" (or its only tensor). */
mgpu_module_kind mgpu_module_kind_guess(const char *module_name, const mgpu_tensor_info *weight,
                                        bool has_bias, mgpu_arch arch);

/* The role of a module (by its stripped name) in an architecture. */
mgpu_module_role mgpu_module_role_of(mgpu_arch arch, const char *module_name);

/* Prefixes of the checkpoint layouts mgpu knows, longest first. */
const char *const *mgpu_known_prefixes(void);

#endif
