"""Networks: the students and their registry, int8 quantization, cost counting, model cards, VGG features."""
