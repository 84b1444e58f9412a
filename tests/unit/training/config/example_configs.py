"""The NNCF 2.x example configs of the reference (§1.8), written out as dicts (the numbers are NNCF's)."""

RESNET50_INT8 = {
    "model": "resnet50",
    "pretrained": True,
    "input_info": {"sample_size": [1, 3, 224, 224]},
    "num_classes": 1000,
    "batch_size": 85,
    "epochs": 1,
    "optimizer": {"type": "Adam", "base_lr": 1e-5},
    "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 850}}},
}

MOBILENET_V2_INT8_PER_TENSOR = {
    "model": "mobilenet_v2",
    "input_info": {"sample_size": [1, 3, 224, 224]},
    "batch_size": 256,
    "epochs": 10,
    "compression": {
        "algorithm": "quantization",
        "initializer": {
            "range": {"num_init_samples": 7000},
            "batchnorm_adaptation": {"num_bn_adaptation_samples": 4096},
        },
        "weights": {"per_channel": False},
        "activations": {"per_channel": False},
    },
}

INCEPTION_V3_INT8 = {
    "model": "inception_v3",
    "input_info": {"sample_size": [2, 3, 299, 299]},
    "batch_size": 32,
    "compression": {
        "algorithm": "quantization",
        "initializer": {"range": {"num_init_samples": 160}},
        "ignored_scopes": [
            "Inception3/__add___0",
            "Inception3/__add___1",
            "Inception3/__add___2",
            "Inception3/__mul___0",
            "Inception3/__mul___1",
            "Inception3/__mul___2",
            "Inception3/cat_0",
        ],
    },
}

RESNET50_HAWQ_STAGED = {
    "model": "resnet50",
    "input_info": {"sample_size": [1, 3, 224, 224]},
    "batch_size": 150,
    "epochs": 30,
    "target_device": "NPU",
    "compression": {
        "algorithm": "quantization",
        "initializer": {
            "range": {"num_init_samples": 1500},
            "precision": {"type": "hawq", "bits": [4, 8], "compression_ratio": 1.4},
        },
        "params": {
            "base_lr": 3.1e-4,
            "base_wd": 1e-5,
            "batch_multiplier": 1,
            "activations_quant_start_epoch": 3,
            "weights_quant_start_epoch": 12,
            "lr_poly_drop_start_epoch": 20,
            "lr_poly_drop_duration_epochs": 10,
            "disable_wd_start_epoch": 20,
        },
    },
}

MOBILENET_V2_AUTOQ_STAGED = {
    "model": "mobilenet_v2",
    "input_info": {"sample_size": [2, 3, 224, 224]},
    "epochs": 10,
    "target_device": "NPU",
    "compression": {
        "algorithm": "quantization",
        "initializer": {
            "precision": {"type": "autoq", "bits": [2, 4, 8], "iter_number": 300, "compression_ratio": 0.15,
                          "eval_subset_ratio": 0.2},
            "range": {"type": "mean_min_max", "num_init_samples": 1500},
            "batchnorm_adaptation": {"num_bn_adaptation_samples": 4000},
        },
        "params": {"activations_quant_start_epoch": 0, "weights_quant_start_epoch": 0,
                   "lr_poly_drop_start_epoch": 0, "lr_poly_drop_duration_epochs": 10},
    },
}  # fmt: skip

RESNET50_RB_SPARSITY_INT8 = {
    "model": "resnet50",
    "input_info": {"sample_size": [1, 3, 224, 224]},
    "epochs": 23,
    "compression": [
        {
            "algorithm": "rb_sparsity",
            "sparsity_init": 0.01,
            "params": {"sparsity_target": 0.61, "sparsity_target_epoch": 5, "sparsity_freeze_epoch": 10},
        },
        {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 850}}},
    ],
}

MOBILENET_V2_RB_SPARSITY_INT8 = {
    "model": "mobilenet_v2",
    "input_info": {"sample_size": [1, 3, 224, 224]},
    "compression": [
        {
            "algorithm": "rb_sparsity",
            "sparsity_init": 0.02,
            "params": {"sparsity_target": 0.52, "sparsity_target_epoch": 8, "sparsity_freeze_epoch": 10},
            "ignored_scopes": ["MobileNetV2/Sequential[features]/Conv2dNormActivation[0]/NNCFConv2d[0]/conv2d_0"],
        },
        {"algorithm": "quantization", "initializer": {"range": {"type": "min_max", "num_init_samples": 256}}},
    ],
}

RESNET34_MAGNITUDE_SPARSITY = {
    "model": "resnet34",
    "input_info": {"sample_size": [1, 3, 32, 32]},
    "epochs": 70,
    "compression": {
        "algorithm": "magnitude_sparsity",
        "params": {
            "schedule": "multistep",
            "multistep_steps": [5, 10, 20, 30, 40],
            "multistep_sparsity_levels": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            "sparsity_freeze_epoch": 50,
        },
    },
}

RESNET50_PRUNING_GM = {
    "model": "resnet50",
    "input_info": {"sample_size": [1, 3, 224, 224]},
    "batch_size": 320,
    "epochs": 100,
    "optimizer": {"type": "SGD", "base_lr": 0.1, "nesterov": True, "momentum": 0.9, "weight_decay": 1e-4,
                  "schedule_type": "multistep", "steps": [20, 40, 60, 80]},
    "compression": {
        "algorithm": "filter_pruning",
        "pruning_init": 0.1,
        "params": {"schedule": "exponential", "pruning_target": 0.4, "pruning_steps": 15,
                   "filter_importance": "geometric_median"},
    },
}  # fmt: skip

RESNET18_PRUNING_LEGR = {
    "model": "resnet18",
    "input_info": {"sample_size": [1, 3, 224, 224]},
    "compression": {
        "algorithm": "filter_pruning",
        "pruning_init": 0.1,
        "params": {"pruning_flops_target": 0.3, "interlayer_ranking_type": "learned_ranking",
                   "legr_params": {"generations": 200, "max_pruning": 0.3}},
    },
}  # fmt: skip

RESNET18_BINARIZATION_XNOR = {
    "model": "resnet18",
    "input_info": {"sample_size": [1, 3, 224, 224]},
    "batch_size": 384,
    "epochs": 90,
    "compression": {
        "algorithm": "binarization",
        "mode": "xnor",
        "params": {
            "activations_quant_start_epoch": 10,
            "weights_quant_start_epoch": 30,
            "lr_poly_drop_start_epoch": 60,
            "lr_poly_drop_duration_epochs": 30,
            "disable_wd_start_epoch": 60,
        },
        "ignored_scopes": [
            "ResNet/NNCFLinear[fc]/linear_0",
            "ResNet/NNCFConv2d[conv1]/conv2d_0",
            "ResNet/Sequential[layer2]/BasicBlock[0]/Sequential[downsample]/NNCFConv2d[0]/conv2d_0",
            "ResNet/Sequential[layer3]/BasicBlock[0]/Sequential[downsample]/NNCFConv2d[0]/conv2d_0",
            "ResNet/Sequential[layer4]/BasicBlock[0]/Sequential[downsample]/NNCFConv2d[0]/conv2d_0",
        ],
    },
}

PRUNING_WITH_KD = {
    "input_info": {"sample_size": [1, 3, 32, 32]},
    "compression": [
        {"algorithm": "filter_pruning", "params": {"pruning_target": 0.3}},
        {"algorithm": "knowledge_distillation", "type": "softmax", "temperature": 2.0},
    ],
}

ALL = {
    "resnet50_int8": RESNET50_INT8,
    "mobilenet_v2_int8_per_tensor": MOBILENET_V2_INT8_PER_TENSOR,
    "inception_v3_int8": INCEPTION_V3_INT8,
    "resnet50_hawq_staged": RESNET50_HAWQ_STAGED,
    "mobilenet_v2_autoq_staged": MOBILENET_V2_AUTOQ_STAGED,
    "resnet50_rb_sparsity_int8": RESNET50_RB_SPARSITY_INT8,
    "mobilenet_v2_rb_sparsity_int8": MOBILENET_V2_RB_SPARSITY_INT8,
    "resnet34_magnitude_sparsity": RESNET34_MAGNITUDE_SPARSITY,
    "resnet50_pruning_gm": RESNET50_PRUNING_GM,
    "resnet18_pruning_legr": RESNET18_PRUNING_LEGR,
    "resnet18_binarization_xnor": RESNET18_BINARIZATION_XNOR,
    "pruning_with_kd": PRUNING_WITH_KD,
}
