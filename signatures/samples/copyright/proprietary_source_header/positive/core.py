# Copyright (C) 2024 Contoso Ltd - All Rights Reserved
# Unauthorized copying of this file, via any medium is strictly prohibited
# Proprietary and confidential

def settle(batch):
    return batch
