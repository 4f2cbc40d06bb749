#!/bin/bash
# A sample bridge job: Slurm queues it, a Pod on the allocated node runs it.
#SBATCH --job-name=hello-gpu
#SBATCH --cpus-per-task=2
#SBATCH --mem=2G
#SBATCH --gres=gpu:a100:1
#SBATCH --time=00:05:00
#K8S_IMAGE=registry.lab:5000/pytorch:2.4
#K8S_ENV=SANDBOX_RUN_DURATION=5s
#K8S_RESULTS=/workspace/outputs
echo "hello from job $SLURM_JOB_ID on GPU(s) $SLURM_JOB_GPUS"
mkdir -p outputs && nvidia-smi -L > outputs/gpus.txt
