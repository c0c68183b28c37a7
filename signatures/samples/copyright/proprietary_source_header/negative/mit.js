// Copyright (c) 2020 Jane Doe
// Permission is hereby granted, free of charge, to any person obtaining a copy
module.exports = {};
